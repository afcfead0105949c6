"""The task tools as an MCP server (Streamable HTTP at /mcp), over the same task actions as the agent."""
