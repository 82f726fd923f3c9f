"""Built-in demo data (avdigits): rendered digit cards, a spoken-digit bank, text hints."""

# Here and not in avdigits.py so that the CLI can show the default without importing cv2.
# 4000 samples: enough for each failure mode to be learned, while demo-data + train stay
# within 5 minutes on a 2-core CPU.
DEFAULT_SAMPLES = 4000
