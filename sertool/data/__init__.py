"""Audio loading, manifests, label schemes and corpus adapters."""
