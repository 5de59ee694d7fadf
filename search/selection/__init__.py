"""From finished trials to the configuration a machine gets: choosing, and measuring before deploying."""
