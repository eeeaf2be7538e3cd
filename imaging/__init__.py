"""Imaging: DICOM/NIfTI loading, segmentation, surface meshes and DICOM SEG."""
