"""The reference gateway in front of LLM backends: its configuration (:mod:`.config`)."""
