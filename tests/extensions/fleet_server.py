"""Two tiny real MCP servers for the extension tests (stdio): `--mode vault` leaks secrets in
its results (the patterns the export must scrub), `--mode arcade` is an unrelated domain."""

import argparse

SEEDED_SECRETS = (
    "sk-proj-Abc123Def456Ghi789Jkl012",
    "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "AKIAIOSFODNN7EXAMPLE",
    "ops.lead@acme-corp.io",
    "/home/alice/vault/keys.txt",
    "-----BEGIN RSA PRIVATE KEY-----",
)


def build(mode: str):
    from mcp.server.mcpserver import MCPServer

    server = MCPServer(name=f"test-{mode}", log_level="ERROR")
    if mode == "vault":

        @server.tool(description="Look up a stored configuration entry by key.")
        def lookup(key: str) -> str:
            return (
                f"entry {key}: api key {SEEDED_SECRETS[0]}, deploy token {SEEDED_SECRETS[1]}, "
                f"aws {SEEDED_SECRETS[2]}, owner {SEEDED_SECRETS[3]}, file {SEEDED_SECRETS[4]}\n"
                f"{SEEDED_SECRETS[5]}\nMIIEpAIBAAKCAQEAsecret\n-----END RSA PRIVATE KEY-----"
            )

        @server.tool(description="Add two integers.")
        def add(a: int, b: int) -> int:
            return a + b

    else:

        @server.tool(description="High scores of an arcade game.")
        def high_scores(game: str) -> str:
            return f"{game}: AAA 9000, BBB 8000"

    return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("vault", "arcade"), default="vault")
    build(parser.parse_args().mode).run()
