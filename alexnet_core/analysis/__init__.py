"""Questions asked of a trained model: evaluation, the embedding map, explanations, profiles, charts."""
