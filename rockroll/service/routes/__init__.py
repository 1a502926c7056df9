"""The routes of the HTTP API, one module per resource; `rockroll.service.app` mounts them."""
