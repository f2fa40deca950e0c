"""Model resolution (``bundled:NAME`` specs), the E5S1 dequantiser and generator prompts."""
