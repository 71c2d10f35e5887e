"""How OMERO's clients show a script's dialog, send its inputs and read its results,
ported line by line from their sources so that tests see the scripts as users do.

- OMERO.web's dialog: omero-web ``omeroweb/webclient/views.py`` ``script_ui`` (the
  parameter tree, built from ``grouping``) and ``script_run`` (the posted form to the
  inputs), with the form of ``templates/webclient/scripts/script_ui.html`` and
  ``include_param.html``. OMERO.web nests a group's parameters but disables none:
  every input of the form is posted (an unticked checkbox is not, and means False).
- OMERO.insight's dialog: omero-insight ``agents/util/ui/ScriptingDialog.java`` (the
  tree), ``ScriptComponent.java`` (a Bool parent enables and disables its children;
  ``getValue`` of a child of an unticked Bool parent is null) and
  ``env/data/model/ParamData.java`` / ``ScriptObject.java`` (a null value is replaced
  by the parameter's default, ``setValueToPass``; still null, it is not sent).
- What the script then receives: the inputs sent, plus the defaults the Processor puts
  into the job's session for omitted ones (omero-py ``omero.scripts.validate_inputs``).
- OMERO.web's Activities panel: ``views.py`` ``activities``, reading the results of a
  finished script (``proc.getResults(0)``, which answers once).
"""

from __future__ import annotations

from typing import Any

# ---- the parameter tree ------------------------------------------------------------------------


def web_script_ui(params: Any, get: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """``script_ui``: the dialog's inputs sorted by ``grouping`` (as strings), each with
    its ``children``: the inputs right after it whose grouping's first part is its
    grouping (one level). ``get`` is the request's query, e.g. ``{"Plate": "51"}`` from
    the selection. (The ``Well`` selection, which needs the server, is left out.)"""
    import omero
    from omero.rtypes import unwrap

    get = get or {}
    inputs = []  # use a list so we can sort by 'grouping'
    data_type_param = ids_param = None
    for key, param in params.inputs.items():
        i: dict[str, Any] = {"name": key.replace("_", " "), "key": key}
        if not param.optional:
            i["required"] = True
        i["description"] = param.description
        if param.min:
            i["min"] = str(param.min.getValue())
        if param.max:
            i["max"] = str(param.max.getValue())
        if param.values:
            i["options"] = [v.getValue() for v in param.values.getValue()]
        if param.useDefault:
            i["default"] = unwrap(param.prototype)
            if isinstance(i["default"], omero.model.IObject):
                i["default"] = None
        pt = unwrap(param.prototype)
        if pt.__class__.__name__ == "dict":
            i["map"] = True
        elif pt.__class__.__name__ == "list":
            i["list"] = True
            if "default" in i:
                i["default"] = ",".join([str(d) for d in i["default"]])
        elif isinstance(pt, bool):
            i["boolean"] = True
        elif isinstance(pt, int):
            i["number"] = "number"
        elif isinstance(pt, float):
            i["number"] = "float"
        if get.get(key) is not None:
            i["default"] = get[key]
        i["prototype"] = unwrap(param.prototype)
        i["grouping"] = param.grouping
        inputs.append(i)
        if key == "IDs":
            ids_param = i
        if key == "Data_Type":
            data_type_param = i
    inputs.sort(key=lambda i: i["grouping"])

    if data_type_param is not None and ids_param is not None and "options" in data_type_param:
        ids_param["default"] = ""
        for dtype in data_type_param["options"]:
            if get.get(dtype) is not None:
                data_type_param["default"] = dtype
                ids_param["default"] = get[dtype]
                break

    # "try to determine hierarchies in the groupings - ONLY handle 1 hierarchy level"
    for i in range(len(inputs)):
        if len(inputs) <= i:
            break
        param = inputs[i]
        grouping = param["grouping"]
        param["children"] = []
        while len(inputs) > i + 1:
            next_grouping = inputs[i + 1]["grouping"]
            if next_grouping.split(".")[0] == grouping:
                param["children"].append(inputs[i + 1])
                inputs.pop(i + 1)
            else:
                break
    return inputs


def insight_parent(param: Any) -> str:
    """``ParamData.getParent``: the grouping up to its last dot ("5.1" -> "5"), or ""."""
    grouping = (param.grouping or "").strip()
    index = grouping.rfind(".")
    return grouping[:index] if index >= 0 else ""


def insight_tree(params: Any) -> dict[str, list[str]]:
    """``ScriptingDialog``'s parents: a top-level parameter (no dot in its grouping)
    whose grouping is the parent of others, with those others (sorted by grouping)."""
    top = {(p.grouping or "").strip(): key for key, p in params.inputs.items()
           if (p.grouping or "").strip() and not insight_parent(p)}
    tree: dict[str, list[str]] = {}
    for key, param in sorted(params.inputs.items(), key=lambda kv: (kv[1].grouping or "").strip()):
        parent = top.get(insight_parent(param))
        if parent is not None:
            tree.setdefault(parent, []).append(key)
    return tree


def bool_parents(params: Any) -> dict[str, list[str]]:
    """The Bool parameters with children in either dialog, with those children: the
    ones a dialog switches off (OMERO.insight) or shows as depending on them."""
    from omero.rtypes import unwrap

    found: dict[str, list[str]] = {}
    for i in web_script_ui(params):
        if i.get("boolean") and i["children"]:
            found[i["key"]] = [c["key"] for c in i["children"]]
    for parent, children in insight_tree(params).items():
        if isinstance(unwrap(params.inputs[parent].prototype), bool):
            found[parent] = list(dict.fromkeys(found.get(parent, []) + children))
    return found


# ---- what each dialog sends ------------------------------------------------------------------------


def web_form(inputs: list[dict[str, Any]], changes: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """What the browser posts from ``script_ui.html``: every input with its shown value
    (the default, or the user's change); a checkbox only when ticked; a select without a
    selected option posts its first option."""
    changes = changes or {}
    post: dict[str, list[str]] = {}
    flat = [x for i in inputs for x in [i, *i.get("children", [])]]
    for i in flat:
        key = i["key"]
        value = changes.get(key, i.get("default"))
        if i.get("boolean"):
            if value:
                post[key] = ["on"]
        elif i.get("map"):
            post[f"{key}_key0"], post[f"{key}_value0"] = [""], [""]
        elif i.get("options"):
            post[key] = [str(value) if value in i["options"] else str(i["options"][0])]
        elif isinstance(value, (list, tuple)):
            post[key] = [",".join(str(v) for v in value)]
        else:
            post[key] = ["" if value is None else str(value)]
    return post


def web_inputs(params: Any, post: dict[str, list[str]]) -> dict[str, Any]:
    """``script_run``: the inputs OMERO.web sends for a posted form (no uploaded file)."""
    import omero
    from omero.rtypes import wrap

    input_map: dict[str, Any] = {}
    for key, param in params.inputs.items():
        prototype = param.prototype
        pclass = prototype.__class__
        # "handle bool separately, since unchecked checkbox will not be in request.POST"
        if pclass == omero.rtypes.RBoolI:
            input_map[key] = pclass(key in post)
            continue
        if pclass.__name__ == "RMapI":
            row, param_map = 0, {}
            key_name, value_name = f"{key}_key0", f"{key}_value0"
            while key_name in post:
                k, v = str(post[key_name][-1]), post[value_name][-1]
                if len(k) > 0 and len(v) > 0:
                    param_map[k] = v
                row += 1
                key_name, value_name = f"{key}_key{row}", f"{key}_value{row}"
            if param_map:
                input_map[key] = wrap(param_map)
            continue
        if key in post:
            if pclass == omero.rtypes.RListI:
                values = post[key]
                if len(values) == 0:
                    continue
                if len(values) == 1:
                    if len(values[0]) == 0:
                        continue
                    values = values[0].split(",")
                list_class = omero.rtypes.RStringI
                pval = prototype.val
                if len(pval) > 0:
                    list_class = pval[0].__class__
                    if list_class == (1).__class__:
                        list_class = omero.rtypes.rint
                value_list = []
                for v in values:
                    try:
                        obj = list_class(v.strip())
                    except Exception:
                        continue
                    value_list.append(omero.rtypes.robject(obj) if isinstance(obj, omero.model.IObject) else obj)
                input_map[key] = omero.rtypes.rlist(value_list)
            else:
                value = post[key][-1]  # Django's QueryDict gives the last value
                if len(value) == 0:
                    continue
                try:
                    input_map[key] = pclass(value)
                except Exception:
                    continue
    return input_map


def insight_default(param: Any) -> Any:
    """``ParamData``'s default: the prototype's value, raised to ``min`` or lowered to
    ``max``, a list's first item; only when the parameter declares a default."""
    from omero.rtypes import unwrap

    if not param.useDefault:
        return None
    value = unwrap(param.prototype)
    low, high = unwrap(param.min), unwrap(param.max)
    if isinstance(low, (int, float)) and not isinstance(low, bool):
        value = low if value is None or value < low else value
    elif isinstance(high, (int, float)) and not isinstance(high, bool):
        value = high if value is None or value > high else value
    if isinstance(value, list):
        value = value[0] if value else value
    return value


def insight_inputs(params: Any, changes: dict[str, Any]) -> dict[str, Any]:
    """What OMERO.insight's dialog sends when the user sets ``changes`` (the rest shown
    at their defaults): a child of an unticked Bool parent has no value
    (``ScriptComponent.getValue``), a parameter without a value sends its default
    (``ParamData.setValueToPass``) or nothing (``ScriptObject.getValueToPass``).
    ``Data_Type`` and ``IDs`` come in ``changes``, as the selection fills them."""
    from omero.rtypes import unwrap

    shown = {key: changes.get(key, insight_default(param)) for key, param in params.inputs.items()}
    parent_of = {child: parent for parent, children in insight_tree(params).items() for child in children}
    sent = {}
    for key, param in params.inputs.items():
        value = shown[key]
        parent = parent_of.get(key)
        # only a checkbox parent becomes its children's parent (ScriptComponent.setChildren)
        if parent is not None and isinstance(unwrap(params.inputs[parent].prototype), bool) and not shown[parent]:
            value = None
        if value is None:
            value = insight_default(param)
        if value is None:
            continue
        sent[key] = _like(param.prototype, value)
    return sent


def _like(prototype: Any, value: Any) -> Any:
    """``value`` as an rtype of the prototype's class (a list of its items' class)."""
    import omero
    from omero.rtypes import rlist

    if isinstance(prototype, omero.RList):
        item = prototype.getValue()[0].__class__ if prototype.getValue() else omero.rtypes.RStringI
        return rlist([item(v) for v in (value if isinstance(value, (list, tuple)) else [value])])
    return prototype.__class__(value)


def script_receives(params: Any, sent: dict[str, Any]) -> dict[str, Any]:
    """The script's ``client.getInputs(unwrap=True)`` for the inputs a client sent: the
    Processor checks them and puts the defaults of omitted ones into the job's session
    (omero-py ``omero.scripts.validate_inputs``, called with the session service)."""
    import omero.scripts
    from omero.rtypes import unwrap

    class _Session:  # the one ISession call validate_inputs makes
        def __init__(self) -> None:
            self.inputs: dict[str, Any] = dict(sent)

        def setInput(self, session, key, value):
            self.inputs[key] = value

    session = _Session()
    errors = omero.scripts.validate_inputs(params, sent, session, "job-session")
    if errors:
        raise AssertionError(f"the Processor refuses these inputs: {errors}")
    return {key: unwrap(value) for key, value in session.inputs.items()}


# ---- reading the results -----------------------------------------------------------------------------


def web_activities(results: dict[str, Any]) -> dict[str, Any]:
    """What OMERO.web's ``activities`` keeps of a finished script's results (the
    ``Message``, ``stdout``/``stderr`` file IDs and ``results``), raising where it fails.
    ``getObjectUrl`` is left out: it needs Django's URL resolver and reads the object
    anew by its ID, never the output's own fields."""
    from omero.rtypes import unwrap

    kept: dict[str, Any] = {}
    r_map: dict[str, Any] = {}
    for key, value in results.items():
        v = value.getValue()
        if key in ("stdout", "stderr", "Message"):
            if key in ("stderr", "stdout"):
                v = v.id.val  # just save the id of original file
            kept[key] = v
        else:
            if hasattr(v, "id"):
                obj_data = {"id": v.id.val, "type": v.__class__.__name__[:-1]}
                if v.isLoaded() and hasattr(v, "file"):
                    mimetypes = {"image/png": "png", "image/jpeg": "jpeg", "text/plain": "text"}
                    if v.file.mimetype.val in mimetypes:
                        obj_data["fileType"] = mimetypes[v.file.mimetype.val]
                        obj_data["fileId"] = v.file.id.val
                    obj_data["name"] = v.file.name.val
                if v.isLoaded() and hasattr(v, "name"):
                    name = unwrap(v.name)
                    if name is not None:
                        obj_data["name"] = name
                r_map[key] = obj_data
            else:
                r_map[key] = unwrap(v)
    kept["results"] = r_map
    return kept
