"""The PACS node (``svdh-run serve``): receive by DICOM, queue on disk, score, send SR and SC back."""
