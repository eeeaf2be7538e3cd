"""Run inside the Janus test namespace: what Janus refuses to someone without our secrets.

``python -m tests.mentor.sfu_probe URL SECRETS_JSON ADDRESS`` prints one JSON object: for each
attempt the Janus error (code and reason) or ``"ok"``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from pathlib import Path

from scrubin.mentor import sfu


async def _attempt(coro) -> str:
    try:
        await coro
        return "ok"
    except sfu.SfuError as exc:
        return str(exc)


def _reach(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return f"answered {r.status}"
    except OSError as exc:
        return f"refused: {exc}"


async def main(url: str, secrets: dict, address: str) -> dict:
    out: dict[str, str] = {}
    out["http_on_address"] = _reach(url.replace("127.0.0.1", address) + "/info")
    out["admin_on_address"] = _reach(
        url.replace("127.0.0.1", address).replace(":8088/janus", ":7088/admin"))
    out["http_on_loopback"] = _reach(url + "/info")
    out["session_without_apisecret"] = await _attempt(sfu.JanusSession(url).create())
    out["session_wrong_apisecret"] = await _attempt(sfu.JanusSession(url, "guess").create())
    s = sfu.JanusSession(url, secrets["api_secret"])
    await s.create()
    try:
        h = await s.attach()
        out["room_without_admin_key"] = await _attempt(sfu.create_room(h, None))
        out["room_wrong_admin_key"] = await _attempt(sfu.create_room(h, "guess"))
        keys = await sfu.create_room(h, secrets["admin_key"])
        out["room_with_admin_key"] = "ok"
        listed = await h.request({"request": "list"})
        out["room_listed"] = str(any(r.get("room") == keys.room for r in listed.get("list", [])))
        h2 = await s.attach()
        out["join_wrong_pin"] = await _attempt(h2.message(
            {"request": "join", "ptype": "publisher", "room": keys.room, "pin": "guess"}))
        out["join_no_pin"] = await _attempt(h2.message(
            {"request": "join", "ptype": "publisher", "room": keys.room}))
        out["destroy_wrong_secret"] = await _attempt(h.request(
            {"request": "destroy", "room": keys.room, "secret": "guess"}))
        out["join_right_pin"] = await _attempt(h2.message(
            {"request": "join", "ptype": "publisher", "room": keys.room, "pin": keys.pin}))
    finally:
        await s.destroy()
    return out


if __name__ == "__main__":
    res = asyncio.run(main(sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), sys.argv[3]))
    print(json.dumps(res))
