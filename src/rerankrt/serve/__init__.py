"""Serving with Triton Inference Server: the model repository (`rerankrt triton`: generation and offline
checks, `repository`) and a real server on it (`rerankrt serve`, `server`)."""
