"""`todo` (the agent's plan, shown again when the context is compacted) and `submit`."""

from __future__ import annotations

from rockroll.agent.tools.base import Tool, ToolContext, ToolResult, arguments, text_arg

TODO_STATUSES = ("pending", "in_progress", "done")
_MARK = {"pending": "[ ]", "in_progress": "[~]", "done": "[x]"}


class Todo(Tool):
    name = "todo"
    description = (
        "Replace your plan with this list of steps. Keep one step in_progress at a time and "
        "mark steps done as you finish them; the whole list is sent every time."
    )
    parameters = arguments(
        {
            "items": {
                "type": "array",
                "description": "the complete plan, in order",
                "items": arguments(
                    {
                        "content": text_arg("what the step does"),
                        "status": {
                            "type": "string",
                            "enum": list(TODO_STATUSES),
                            "description": "pending, in_progress or done",
                        },
                    },
                    ["content", "status"],
                ),
            }
        },
        ["items"],
    )

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        ctx.todo[:] = [
            {"id": i, "content": item["content"], "status": item["status"]}
            for i, item in enumerate(args["items"], 1)
        ]
        return ToolResult(output=render_todo(ctx.todo), meta={"items": len(ctx.todo)})


def render_todo(todo: list[dict]) -> str:
    if not todo:
        return "Plan cleared."
    done = sum(t["status"] == "done" for t in todo)
    lines = [f"Plan ({done}/{len(todo)} done):"]
    lines += [f"{_MARK[t['status']]} {t['id']}. {t['content']}" for t in todo]
    return "\n".join(lines)


class Submit(Tool):
    name = "submit"
    description = "Finish the task: call this once the work is complete and checked."
    parameters = arguments({"summary": text_arg("a short summary of what was done")}, [])

    def run(self, ctx: ToolContext, args: dict) -> ToolResult:
        return ToolResult(output="submitted", done=True, meta={"summary": args.get("summary", "")})
