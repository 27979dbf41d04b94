"""Mail at the edge: the IMAP mailbox emails come from and the SMTP server replies go to.

Only stdlib ``imaplib``/``smtplib`` over TLS with certificate verification; their exceptions
become ``errors.MailError`` here. What is taken and what is sent is decided in steps/.
"""
