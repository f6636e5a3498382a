"""Ray Serve application that deploys a registered model as an HTTP endpoint."""
