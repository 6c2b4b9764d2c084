"""Policy texts the proxy tests share (one copy, so a change to the policy language touches one
place)."""

# send_money allowed, except to a recipient whose name starts with "US".
PAYMENTS = """
rules:
  - id: pay
    effect: allow
    action: {tool: send_money}
  - id: no-us-transfers
    effect: deny
    action: {tool: send_money}
    when: {args: {$.recipient: {glob: "US*"}}}
    reason: US transfers are blocked
"""
