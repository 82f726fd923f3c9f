"""Built-in demo data (avdigits): rendered digit cards, a spoken-digit bank, text hints."""
