"""The guide's remedy 2 as a file: a docker compose file with one `ollama/ollama` service per host port."""

from __future__ import annotations


REDIS_PORT = 6379


def compose_yaml(n: int, *, base_port: int = 11434, gpu: bool = False, host: str = "127.0.0.1",
                 num_parallel: int = 1, redis: bool = False) -> str:
    """A compose file: N services, ports base_port.., one shared models volume, restart policy, optional GPU; with
    `redis`, a Redis for the slots every parallama replica shares (`slot_store`)."""
    lines = [
        "# Written by `parallama compose`: one Ollama container per port, sharing one models volume,",
        "# so each model is downloaded once. Start with `docker compose up -d`.",
        "services:",
    ]
    for i in range(n):
        port = base_port + i
        lines += [
            f"  ollama{i + 1}:",
            "    image: ollama/ollama",
            f"    container_name: ollama{i + 1}",
            "    restart: unless-stopped",
            "    ports:",
            f'      - "{host}:{port}:11434"',
            "    environment:",
            f'      OLLAMA_NUM_PARALLEL: "{num_parallel}"',
            "    volumes:",
            "      - ollama-models:/root/.ollama",
        ]
        if gpu:
            lines += [
                "    deploy:",
                "      resources:",
                "        reservations:",
                "          devices:",
                "            - driver: nvidia",
                "              count: all",
                "              capabilities: [gpu]",
            ]
    if redis:
        lines += [
            "  redis:",
            "    # The servers' slots, shared by every parallama replica:",
            f"    # PARALLAMA_SLOT_STORE=redis://{host}:{REDIS_PORT}/0 (or \"slot_store\" in the config).",
            "    image: redis:7-alpine",
            "    container_name: parallama-redis",
            "    restart: unless-stopped",
            '    command: ["redis-server", "--save", "", "--appendonly", "no"]',
            "    ports:",
            f'      - "{host}:{REDIS_PORT}:6379"',
        ]
    lines += ["volumes:", "  ollama-models: {}", ""]
    return "\n".join(lines)
