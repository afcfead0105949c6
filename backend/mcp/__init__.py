"""The task tools as an MCP server (Streamable HTTP at /mcp), over the same task actions as the agent.

`server` builds the MCPServer and its five tools; `auth` verifies the bearer token in front of it
and gives each tool the verified user.
"""
