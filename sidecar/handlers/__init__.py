"""aiohttp handlers, one file per resource."""
