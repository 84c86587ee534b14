"""Model definitions (import pulls in Keras)."""
