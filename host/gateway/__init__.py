"""The reference gateway in front of LLM backends: its configuration (:mod:`.config`), server (:mod:`.server`), token
counts (:mod:`.tokens`), metrics (:mod:`.metrics`), mock backends (:mod:`.mock`) and demo (:mod:`.demo`)."""
