"""The HTTP side: a small asyncio server, its routes (/metrics, health, and the API and page)."""
