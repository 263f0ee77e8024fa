"""Radiology-domain pieces: the 14 CheXpert observations, study records and dataset readers,
report cleaning, the CheXpert-style labeler and phantom chest X-ray images."""
