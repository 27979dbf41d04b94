"""Domain: money, the ticket FSM, reconciliation rules, proposals and approval tokens."""
