"""Encoders: the LLM item encoder, the user-interest encoder and the model that joins them."""
