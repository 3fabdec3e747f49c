"""OpenAI request and response shapes: plain pydantic data, no numpy or tritonclient here."""
