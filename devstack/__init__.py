"""Install and run the local notihub stack (Redis, MongoDB replica set, API, socket workers, nginx)."""
