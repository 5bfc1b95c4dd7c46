"""The other protocols this service speaks: Hugging Face (TGI, TEI, the Inference API) and OpenAI."""
