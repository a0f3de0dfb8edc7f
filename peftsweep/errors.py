"""The one error type for user mistakes (every layer may raise it): it carries every problem found, and the CLI prints
it without a traceback."""

from __future__ import annotations


class UserError(Exception):
    def __init__(self, problems: list[str] | str, title: str = "invalid input"):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.title = title
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.title} ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):"]
        return "\n".join(lines + [f"  - {p}" for p in self.problems])
