"""Email connector: IMAP mailboxes in (email.received), SMTP out (email.send / email.reply)."""

from connectors.email.imap import MailboxError, Step, check_mailbox, connect
from connectors.email.mailboxes import (
    DEFAULT_PORTS,
    SECURITY_MODES,
    CursorView,
    FailureView,
    MailboxRecord,
    MailboxSettings,
    PasswordUnavailable,
    add_mailbox,
    get_mailbox,
    list_failures,
    list_mailboxes,
    mailbox_cursors,
    mailbox_view,
    remove_mailbox,
)
from connectors.email.parse import MessageSource, UnusableMessage, parse_message
from connectors.email.poller import FolderResult, PollOptions, poll_mailbox, sync_folder
from connectors.email.watch import watch_folder

__all__ = [
    "DEFAULT_PORTS",
    "SECURITY_MODES",
    "CursorView",
    "FailureView",
    "FolderResult",
    "MailboxError",
    "MailboxRecord",
    "MailboxSettings",
    "MessageSource",
    "PasswordUnavailable",
    "PollOptions",
    "Step",
    "UnusableMessage",
    "add_mailbox",
    "check_mailbox",
    "connect",
    "get_mailbox",
    "list_failures",
    "list_mailboxes",
    "mailbox_cursors",
    "mailbox_view",
    "parse_message",
    "poll_mailbox",
    "remove_mailbox",
    "sync_folder",
    "watch_folder",
]
