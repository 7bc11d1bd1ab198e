"""Live endpoints: one platform of one model behind an ASGI server, its label hidden.

``service`` runs requests with the project's execution layer, ``tensors`` is the KServe v2
tensor codec (JSON and the binary-tensor extension), ``kserve`` and ``openai_api`` are the
routes, ``app`` puts them together and runs uvicorn. Heavy imports (fastapi, uvicorn, the
runtimes) happen only when a server is built.
"""
