"""Synthetic PA hand radiographs with known SvdH grades (numpy + pydicom only)."""
