"""The demo: a fake language model streaming through a hub."""
