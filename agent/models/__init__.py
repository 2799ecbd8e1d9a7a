"""The model layer: chat models (Phi-3 in process, or an OpenAI-compatible server) and the adapter registry.

Import from the submodules; this package imports nothing heavy so that `import agent.models` stays cheap.
"""
