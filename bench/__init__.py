"""The benchmark (`make bench`) and the OpenAI-compatible stub model it and the tests use."""
