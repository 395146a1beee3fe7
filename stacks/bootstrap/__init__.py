"""The one-time bootstrap: state bucket, secrets key, keyless CI identity and the deployer."""
