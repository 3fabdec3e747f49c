"""Vision-language (LLaVA) model for Triton's Python backend, generating with the chat LLM's engine.

Modules: `preprocess` (image decoding and the HF CLIP/LLaVA image processor's resize, crop and normalise in
PIL and numpy), `prompt` (image placeholders expanded to the image tokens, features placed at them) and
`model` (the TritonPythonModel: the chat model's contract plus the vLLM backend's `image` input, image
features from the vision model through BLS).
"""
