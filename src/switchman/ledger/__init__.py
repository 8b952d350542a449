"""switchman.ledger"""
