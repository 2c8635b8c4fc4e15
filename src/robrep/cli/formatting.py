"""Help formatting shared by every ``robrep`` command.

Every option's help line ends with its default (or says the option is required), and the
parser's description and epilog (the examples) keep their line breaks.
"""

from __future__ import annotations

import argparse
import copy

__all__ = ["HelpFormatter"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``RawDescriptionHelpFormatter`` that appends ``(default: ...)`` or ``(required)``.

    Flags (``store_true``/``store_false``/``count``), ``--help``, ``--version`` and positionals
    are left alone; help strings that already mention their default are not changed.
    """

    _FLAG_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction,
                     argparse._VersionAction, argparse._CountAction, argparse._StoreConstAction)

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if not action.option_strings or isinstance(action, self._FLAG_ACTIONS) or action.default is argparse.SUPPRESS:
            return help_text
        if "default" in help_text.lower():
            return help_text
        if action.required:
            return f"{help_text} (required)".strip()
        if action.default is None:
            return f"{help_text} (default: none)".strip()
        return f"{help_text} (default: %(default)s)".strip()

    def _format_action(self, action: argparse.Action) -> str:
        # argparse skips the help column of an option without help text: give it one
        if not action.help and action.option_strings and action.help is not argparse.SUPPRESS:
            shown = self._get_help_string(action)
            if shown:
                action = copy.copy(action)
                action.help = shown
        return super()._format_action(action)
