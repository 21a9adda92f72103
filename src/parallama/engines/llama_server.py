"""The child process of the `llama-cpp` engine: llama.cpp's own HTTP server, run in-process by `xllamacpp`.

`python -m parallama.engines.llama_server --model F.gguf --port P …` starts the server and then only waits: for
SIGTERM or SIGINT (then it exits at once, the way `down` and a run's end expect) or for the server to fail. It is a
process of its own so that `up`/`down`, crash detection, logs and the state directory treat it as any server.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m parallama.engines.llama_server")
    parser.add_argument("--model", required=True, help="The GGUF file.")
    parser.add_argument("--alias", required=True, help="The name /v1/models lists it under.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True, help="CPU threads, for generation and prompts.")
    parser.add_argument("--parallel", type=int, default=1, help="Slots: requests decoded together.")
    parser.add_argument("--ctx-per-slot", type=int, required=True, help="Tokens of context each slot has.")
    parser.add_argument("--poll", type=int, default=0, help="How hard idle threads spin for work, 0–100.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv)
    # Blocked before the server's threads start, so they inherit the mask and only sigwait below takes these.
    stop = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.cpuparams.poll = params.cpuparams_batch.poll = args.poll
    params.n_parallel = args.parallel
    # llama.cpp splits n_ctx evenly between the slots (kv_unified off): each slot gets ctx-per-slot tokens.
    params.n_ctx = args.ctx_per_slot * args.parallel
    params.cont_batching = True
    params.endpoint_metrics = True
    params.endpoint_slots = True
    server = xllamacpp.Server(params)
    print(f"parallama: llama.cpp server on {server.listening_address}: {args.parallel} slot(s) of "
          f"{args.ctx_per_slot} tokens, {args.threads} thread(s)", flush=True)
    signal.sigwait(stop)
    sys.stdout.flush()
    os._exit(0)  # the server's threads hold no state worth a slow shutdown


if __name__ == "__main__":
    main()
