"""Serving in the API process: the model cache (cache), micro-batching (batcher), the bounded
pool heavy work runs in (pool), request bodies as model input (inputs, under limits), and the
calls the predict / embed / generate / evaluate routes make (service)."""
