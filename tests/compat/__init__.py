"""Real clients whose pins clash with the suite's venv, each in a venv of its own (envs.py), run as scripts
(clients/) against the session's real stack."""
