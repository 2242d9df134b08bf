"""A model's answers: safe model loading, the forward pass, top-k."""
