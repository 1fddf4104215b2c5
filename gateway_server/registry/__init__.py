"""The register (登记造册): markets, merchants, scales, bindings, QR codes, register CSV."""
