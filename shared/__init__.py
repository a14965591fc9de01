"""What every service imports: contracts, broker layer, settings, logging, ops endpoints."""
