"""A local HTTP server that speaks vLLM's OpenAI-compatible API at the wire, for tests and the README walk-through.

What it reproduces is what expertbot relies on, with vLLM's routes, status codes, error bodies and messages
(vllm/entrypoints/openai/models/serving.py and serve/lora/api_router.py, vLLM 0.11+):

- `GET /v1/models`: the base model, then one card per loaded adapter (`root` = its path, `parent` = the base).
- `POST /v1/chat/completions`: plain JSON or SSE (`"stream": true`), for the base model or a loaded adapter; any
  other `model` is 404 `The model `x` does not exist.` (NotFoundError, param "model").
- `POST /v1/load_lora_adapter {"lora_name", "lora_path"}`: 200 `text/plain` "Success: LoRA adapter 'x' added
  successfully."; 400 InvalidUserInput when a field is missing or the name is taken (unless `load_inplace`);
  404 NotFoundError "Loading lora x failed: No adapter found for P" when P holds no adapter_config.json; 500
  InternalServerError when the engine refuses it (rank above `--max-lora-rank`, or a path made to fail).
- `POST /v1/unload_lora_adapter {"lora_name"}`: 200 "Success: LoRA adapter 'x' removed successfully."; 404
  "The lora adapter 'x' cannot be found.".
- Without runtime updating (`runtime_lora=False`, i.e. VLLM_ALLOW_RUNTIME_LORA_UPDATING unset) the two adapter
  routes do not exist: FastAPI's 404 `{"detail": "Not Found"}`.

`restart()` forgets every adapter, as a restarted vLLM does. The text it "generates" names the model that answered,
so a test (or a person) sees which adapter served a request. Run it alone with
`python -m bot.fakes.vllm --port 8001 --model phi3-domain`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

_RUNTIME_WARNING = "LoRA dynamic loading & unloading is enabled in the API server."


def _error(message: str, err_type: str, status: int, param: str | None = None) -> web.Response:
    """vLLM's ErrorResponse body: {"error": {"message", "type", "param", "code"}}."""
    body = {"error": {"message": message, "type": err_type, "param": param, "code": status}}
    return web.json_response(body, status=status)


class FakeVllm:
    """One vLLM-speaking server on 127.0.0.1:`port` (0: a free port), run in a thread of its own."""

    def __init__(
        self,
        *,
        model: str = "phi3-domain",
        port: int = 0,
        max_lora_rank: int = 64,
        runtime_lora: bool = True,
        words_per_chunk: int = 1,
    ) -> None:
        self.model = model
        self.port = port
        self.max_lora_rank = max_lora_rank
        self.runtime_lora = runtime_lora
        self.words_per_chunk = words_per_chunk
        self.loras: dict[str, str] = {}
        """lora_name -> lora_path, in load order."""
        self.refuse_paths: dict[str, str] = {}
        """lora_path -> engine error message: loading that path fails with 500, as a broken adapter does."""
        self.served: Counter[str] = Counter()
        """Chat completions answered, per model name."""
        self.calls: list[tuple[str, str]] = []
        """(route, lora_name or model) in arrival order: lets a test check that a load came before a request."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    # --- lifecycle ----------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeVllm:
        self._thread = threading.Thread(target=self._serve, name=f"fake-vllm-{self.port}", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the fake vLLM server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def restart(self) -> None:
        """What a restarted vLLM remembers of runtime-loaded adapters: nothing."""
        self.loras.clear()

    def __enter__(self) -> FakeVllm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        if self.runtime_lora:
            app.router.add_post("/v1/load_lora_adapter", self._load)
            app.router.add_post("/v1/unload_lora_adapter", self._unload)
        return app

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._runner = web.AppRunner(self.app())
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        loop.run_until_complete(site.start())
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self._started.set()
        loop.run_forever()
        loop.close()

    # --- routes -------------------------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        now = int(time.time())
        cards = [{"id": self.model, "object": "model", "created": now, "owned_by": "vllm", "root": self.model}]
        for name, path in self.loras.items():
            cards.append(
                {"id": name, "object": "model", "created": now, "owned_by": "vllm", "root": path, "parent": self.model}
            )
        return web.json_response({"object": "list", "data": cards})

    async def _load(self, request: web.Request) -> web.Response:
        body = await _json(request)
        name, path = str(body.get("lora_name") or ""), str(body.get("lora_path") or "")
        self.calls.append(("load", name))
        if not name or not path:
            return _error("Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput", 400)
        if name in self.loras and not body.get("load_inplace"):
            return _error(
                f"The lora adapter '{name}' has already been loaded. If you want to load the adapter in place, "
                "set 'load_inplace' to True.",
                "InvalidUserInput",
                400,
            )
        config = Path(path) / "adapter_config.json"
        if not config.is_file():
            return _error(f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError", 404)
        if path in self.refuse_paths:
            return _error(self.refuse_paths[path], "InternalServerError", 500)
        try:
            rank = int(json.loads(config.read_text(encoding="utf-8")).get("r", 0))
        except (OSError, ValueError) as exc:
            return _error(f"Loading lora {name} failed: {exc}", "InternalServerError", 500)
        if rank > self.max_lora_rank:
            message = f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}."
            return _error(message, "InternalServerError", 500)
        self.loras[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload(self, request: web.Request) -> web.Response:
        body = await _json(request)
        name = str(body.get("lora_name") or "")
        self.calls.append(("unload", name))
        if not name:
            return _error("'lora_name' needs to be provided to unload a LoRA adapter.", "InvalidUserInput", 400)
        if name not in self.loras:
            return _error(f"The lora adapter '{name}' cannot be found.", "NotFoundError", 404)
        del self.loras[name]
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        model = str(body.get("model") or self.model)
        self.calls.append(("chat", model))
        if model != self.model and model not in self.loras:
            return _error(f"The model `{model}` does not exist.", "NotFoundError", 404, param="model")
        self.served[model] += 1
        question = next(
            (str(m.get("content")) for m in reversed(body.get("messages", [])) if m.get("role") == "user"), ""
        )
        text = f"[{model}] You asked: {' '.join(question.split()[:12])}"
        created, cid = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
        prompt_tokens, completion_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"]), 0
        if not body.get("stream"):
            completion_tokens = len(text.split())
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            usage = _usage(prompt_tokens, completion_tokens)
            payload = {"id": cid, "object": "chat.completion", "created": created, "model": model}
            return web.json_response({**payload, "choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
            chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        words = text.split(" ")
        for i in range(0, len(words), self.words_per_chunk):
            piece = " ".join(words[i : i + self.words_per_chunk])
            await send({"content": piece if i == 0 else " " + piece})
            completion_tokens += 1
            await asyncio.sleep(0)
        await send({}, finish="stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage_chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
            usage_chunk |= {"choices": [], "usage": _usage(prompt_tokens, completion_tokens)}
            await response.write(f"data: {json.dumps(usage_chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def main() -> None:
    parser = argparse.ArgumentParser(description="A local server speaking vLLM's OpenAI-compatible API.")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model", default="phi3-domain", help="the served model name (vLLM --served-model-name)")
    parser.add_argument("--max-lora-rank", type=int, default=64)
    args = parser.parse_args()
    server = FakeVllm(model=args.model, port=args.port, max_lora_rank=args.max_lora_rank)
    print(f"{_RUNTIME_WARNING} Serving {args.model} on http://127.0.0.1:{args.port}/v1", flush=True)
    web.run_app(server.app(), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
