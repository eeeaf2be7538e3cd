// Frame-id strip reader (mentor/DESIGN.md "Frame ids and the strip").
//
// The strip is the 16 rows below the 1280x720 view: 40 cells of (width // 40) x 16 px,
// grey 255 = bit 1, 0 = bit 0. Cells 0..31 hold the frame id (uint32, MSB first), cells
// 32..39 a CRC-8 (polynomial 0x07, initial value 0, no reflection, no final XOR) of the id's
// 4 bytes big-endian. A reader averages the central half-width x 8 px of each cell
// (16 x 8 px at 1280 wide), thresholds at 128 and drops ids whose CRC does not match.
// Id 0 is reserved: CRC-8 of four zero bytes is 0, so an all-black strip (a black frame)
// would read as id 0 with a valid CRC; the reader returns null for it.

export const STRIP_ROWS = 16;
export const STRIP_CELLS = 40;

/** CRC-8, poly 0x07, init 0 (CRC-8/SMBUS) of a byte array. */
export function crc8(bytes) {
  let crc = 0;
  for (const b of bytes) {
    crc ^= b & 0xff;
    for (let i = 0; i < 8; i++) {
      crc = (crc & 0x80) ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
    }
  }
  return crc;
}

/**
 * Read the frame id from the strip's RGBA pixels.
 * @param {Uint8ClampedArray} rgba  pixels of the strip, row-major RGBA, `width` x `rows`
 * @param {number} width  strip width in pixels (the video width)
 * @param {number} rows  strip height in pixels (16 when read at full resolution)
 * @returns {number|null} the frame id, or null when the CRC does not match or the id is 0
 */
export function readStrip(rgba, width, rows = STRIP_ROWS) {
  const cw = Math.floor(width / STRIP_CELLS);
  if (cw < 2 || rows < 2) return null;
  const sw = Math.max(1, cw >> 1), sh = Math.max(1, rows >> 1);
  const y0 = (rows - sh) >> 1;
  const bits = [];
  for (let c = 0; c < STRIP_CELLS; c++) {
    const x0 = c * cw + ((cw - sw) >> 1);
    let sum = 0;
    for (let y = y0; y < y0 + sh; y++) {
      let o = (y * width + x0) * 4;
      for (let x = 0; x < sw; x++, o += 4) sum += (rgba[o] + rgba[o + 1] + rgba[o + 2]) / 3;
    }
    bits.push(sum / (sw * sh) >= 128 ? 1 : 0);
  }
  let id = 0;
  for (let i = 0; i < 32; i++) id = id * 2 + bits[i];
  let crc = 0;
  for (let i = 32; i < 40; i++) crc = crc * 2 + bits[i];
  const bytes = [(id >>> 24) & 0xff, (id >>> 16) & 0xff, (id >>> 8) & 0xff, id & 0xff];
  return id !== 0 && crc8(bytes) === crc ? id : null;
}
