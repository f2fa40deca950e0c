"""The pipeline's stages, one module each, one shape: key -> plan units -> run the missing ones -> publish."""
