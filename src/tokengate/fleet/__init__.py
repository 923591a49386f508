"""The fleet file: deployments, engine args, gateway routes and keys."""
