"""Tools the chat may run: where they come from and how a call is made.

- base.py: a tool's definition, a call's outcome, the limits every call obeys;
- files.py: Python tool files in user_data/tools/ (Text Generation WebUI's format);
- mcp_config.py: user_data/mcp.json (Claude Desktop's format), read and checked;
- mcp.py: MCP servers (stdio and streamable HTTP) through the official SDK;
- web.py: web search and page reading, off unless the owner turns them on;
- access.py: which tools each user may use (the owner decides);
- registry.py: all of them behind one list-and-call interface.

Only the owner configures tools (files on disk, the command line); nothing a browser
or an API request sends can add one.
"""
