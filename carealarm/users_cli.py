"""``carealarm users``: add a console user, deactivate or re-activate one, reset a password.

Passwords follow :func:`central.passwords.password_problem` (the API's policy). Deactivating a user or
resetting a password ends every session of that user at once.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TypeAlias

from sqlalchemy import select
from sqlalchemy.orm import Session

from central.auth import ROLES, disable_user, enable_user, hash_password, reset_password
from central.passwords import password_problem
from storage.models import User
from storage.registry import RegistryError, add_user

__all__ = ["add_user_commands", "run_users"]

_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_user_commands(sub: _Commands) -> None:
    """``users add|deactivate|activate|reset-password``."""
    users = sub.add_parser("users", help="manage console users", description="Manage console users.")
    u_sub = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    u_add = u_sub.add_parser(
        "add",
        help="add a console user (password asked, or read from stdin)",
        description="Add a console user. The password is asked twice, or read from "
        "standard input with --password-stdin.",
    )
    u_add.add_argument("username")
    u_add.add_argument("--name", required=True, help="display name")
    u_add.add_argument("--role", required=True, choices=ROLES)
    u_add.add_argument("--district", default="", help="the district nurse's district or team")
    u_add.add_argument("--email", default=None)
    u_add.add_argument("--password-stdin", action="store_true")
    for action, text in (
        ("deactivate", "deactivate a user: sign-in refused, every session ended at once"),
        ("activate", "let a deactivated user sign in again"),
    ):
        parser = u_sub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        parser.add_argument("username")
    reset = u_sub.add_parser(
        "reset-password",
        help="give a user a new password (every session of theirs ends)",
        description="Give a user a new password, asked twice or read from standard input with "
        "--password-stdin. Every session of the user ends at once.",
    )
    reset.add_argument("username")
    reset.add_argument("--password-stdin", action="store_true")


def run_users(session: Session, args: argparse.Namespace, now_ms: int) -> None:
    """Run one ``users`` action; raise RegistryError with a clear message when it cannot be done."""
    if args.action == "add":
        password = read_password(args.password_stdin, args.username)
        added = add_user(
            session,
            username=args.username,
            display_name=args.name,
            role=args.role,
            password_hash=hash_password(password),
            district=args.district,
            now_ms=now_ms,
        )
        added.email = args.email
        print(f"user {added.username} ({added.role}) added")
        return
    found = session.scalars(select(User).where(User.username == args.username)).first()
    if found is None:
        raise RegistryError(f"no user {args.username}")
    user = found
    if args.action == "deactivate":
        ended = disable_user(session, user, now_ms)
        print(f"user {user.username} deactivated; {ended} sessions ended")
    elif args.action == "activate":
        enable_user(user)
        print(f"user {user.username} may sign in again")
    else:
        ended = reset_password(session, user, read_password(args.password_stdin, user.username))
        print(f"password of {user.username} reset; {ended} sessions ended")


def read_password(from_stdin: bool, username: str) -> str:
    """A new password, asked twice (or one line of stdin), refused unless the policy accepts it."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise RegistryError("the passwords differ")
    problem = password_problem(password, username=username)
    if problem:
        raise RegistryError(problem)
    return password
