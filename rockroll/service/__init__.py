"""The sandbox server: HTTP API, auth, persistent state, lifecycle (`rockroll serve`)."""
