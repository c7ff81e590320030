"""pointgate simulators: member phone, store terminals, partner network, bank, load, the demo story."""
