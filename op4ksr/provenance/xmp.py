"""The output's XMP: the input's own packet with the label and lineage merged in, never replaced.

Merged into the input's packet (kept whole: its other properties, namespaces and History):
- `Iptc4xmpExt:DigitalSourceType`: the IPTC URI of how the output was made (set, replacing the input's);
- `xmpMM:DocumentID`, `xmpMM:InstanceID`: new for the output; `xmpMM:OriginalDocumentID` kept, or
  the input's DocumentID when it had none, so a chain of derivatives names its first master;
- `xmpMM:DerivedFrom`: the input's key (stRef:filePath), its Document/InstanceID when it had them,
  and its sha256 and etag (op4ksr: fields, as XMP lets a struct carry fields of another namespace);
- one `xmpMM:History` event appended: action, time, softwareAgent (op4ksr version + model id),
  parameters (sizes, params hash, source type).
An input packet that is not well-formed XML cannot be merged into: the output gets a new packet.
"""
from __future__ import annotations

import xml.dom.minidom as minidom
from xml.parsers.expat import ExpatError

from op4ksr.provenance.lineage import Lineage, source_type_uri

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
X = "adobe:ns:meta/"
NAMESPACES = {
    "xmpMM": "http://ns.adobe.com/xap/1.0/mm/",
    "stRef": "http://ns.adobe.com/xap/1.0/sType/ResourceRef#",
    "stEvt": "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "op4ksr": "https://github.com/op4ksr/ns/provenance/1.0/",
}
MM, IPTC = NAMESPACES["xmpMM"], NAMESPACES["Iptc4xmpExt"]
EMPTY_PACKET = (f'<x:xmpmeta xmlns:x="{X}"><rdf:RDF xmlns:rdf="{RDF}">'
                '<rdf:Description rdf:about=""/></rdf:RDF></x:xmpmeta>')
PACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
PACKET_END = '<?xpacket end="w"?>'
REPLACED = ((MM, "DocumentID"), (MM, "InstanceID"), (MM, "DerivedFrom"), (IPTC, "DigitalSourceType"))


def merged_xmp(source_xmp: bytes | None, lineage: Lineage) -> bytes:
    """The output's XMP packet (UTF-8): `source_xmp` with the label, ids, DerivedFrom and a History event."""
    doc = _parse(source_xmp)
    rdf = doc.getElementsByTagNameNS(RDF, "RDF")[0]
    descriptions = [d for d in rdf.childNodes if d.nodeType == d.ELEMENT_NODE and d.namespaceURI == RDF]
    source_ids = {name: _take(descriptions, MM, name) for name in ("DocumentID", "InstanceID")}
    original = _value(descriptions, MM, "OriginalDocumentID")
    for namespace, name in REPLACED:
        _take(descriptions, namespace, name)
    ours = doc.createElementNS(RDF, "rdf:Description")
    ours.setAttributeNS(RDF, "rdf:about", "")
    ours.setAttribute("xmlns:rdf", RDF)
    for prefix, uri in NAMESPACES.items():
        ours.setAttribute(f"xmlns:{prefix}", uri)
    rdf.appendChild(ours)
    _text(doc, ours, "xmpMM:DocumentID", lineage.document_id)
    _text(doc, ours, "xmpMM:InstanceID", lineage.instance_id)
    if not original and source_ids["DocumentID"]:
        _text(doc, ours, "xmpMM:OriginalDocumentID", source_ids["DocumentID"])
    _text(doc, ours, "Iptc4xmpExt:DigitalSourceType", source_type_uri(lineage.digital_source_type))
    derived = _struct(doc, ours, "xmpMM:DerivedFrom")
    _text(doc, derived, "stRef:filePath", lineage.source_key)
    for name, value in (("stRef:documentID", source_ids["DocumentID"]), ("stRef:instanceID", source_ids["InstanceID"]),
                        ("op4ksr:sha256", lineage.source_sha256), ("op4ksr:etag", lineage.source_etag)):
        if value:
            _text(doc, derived, name, value)
    _history_sequence(doc, descriptions, ours).appendChild(_event(doc, lineage))
    body = "".join(node.toxml() for node in doc.childNodes if node.nodeType == node.ELEMENT_NODE)
    return f"{PACKET_BEGIN}\n{body}\n{PACKET_END}".encode()


def _parse(source_xmp: bytes | None) -> minidom.Document:
    """The packet as a DOM; a new empty packet when there is none or it is not well-formed XMP."""
    if source_xmp:
        text = source_xmp.decode("utf-8", "replace").strip("\x00 \t\r\n")
        try:
            doc = minidom.parseString(text.encode())
        except ExpatError:
            return minidom.parseString(EMPTY_PACKET)
        if doc.getElementsByTagNameNS(RDF, "RDF"):
            return doc
        root = doc.documentElement
        if root.namespaceURI == X and root.localName == "xmpmeta":  # an empty x:xmpmeta: given its rdf:RDF
            rdf = doc.createElementNS(RDF, "rdf:RDF")
            rdf.setAttribute("xmlns:rdf", RDF)
            root.appendChild(rdf)
            return doc
    return minidom.parseString(EMPTY_PACKET)


def _matches(node, namespace: str, name: str) -> bool:
    return node.nodeType == node.ELEMENT_NODE and node.namespaceURI == namespace and node.localName == name


def _value(descriptions, namespace: str, name: str) -> str | None:
    """A simple property's value, written as an attribute or an element of any rdf:Description."""
    for description in descriptions:
        if description.hasAttributeNS(namespace, name):
            return description.getAttributeNS(namespace, name)
        for child in description.childNodes:
            if _matches(child, namespace, name):
                return "".join(t.data for t in child.childNodes if t.nodeType == t.TEXT_NODE).strip() or None
    return None


def _take(descriptions, namespace: str, name: str) -> str | None:
    """Remove a property from every rdf:Description; its (first) simple value, if it had one."""
    value = _value(descriptions, namespace, name)
    for description in descriptions:
        if description.hasAttributeNS(namespace, name):
            description.removeAttributeNS(namespace, name)
        for child in [c for c in description.childNodes if _matches(c, namespace, name)]:
            description.removeChild(child)
    return value


def _text(doc, parent, qualified: str, value: str) -> None:
    prefix = qualified.split(":")[0]
    element = doc.createElementNS(NAMESPACES[prefix], qualified)
    element.appendChild(doc.createTextNode(value))
    parent.appendChild(element)


def _struct(doc, parent, qualified: str):
    element = doc.createElementNS(NAMESPACES[qualified.split(":")[0]], qualified)
    element.setAttributeNS(RDF, "rdf:parseType", "Resource")
    parent.appendChild(element)
    return element


def _history_sequence(doc, descriptions, ours):
    """The rdf:Seq of the input's xmpMM:History to append to, or a new History in our Description."""
    for description in descriptions:
        for child in description.childNodes:
            if _matches(child, MM, "History"):
                for seq in child.childNodes:
                    if _matches(seq, RDF, "Seq"):
                        return seq
                description.removeChild(child)  # not a sequence: not XMP's History, replaced by ours
    history = doc.createElementNS(MM, "xmpMM:History")
    seq = doc.createElementNS(RDF, "rdf:Seq")
    history.appendChild(seq)
    ours.appendChild(history)
    return seq


def _event(doc, lineage: Lineage):
    item = doc.createElementNS(RDF, "rdf:li")
    item.setAttribute("xmlns:rdf", RDF)  # the input's packet may name RDF's namespace otherwise
    item.setAttributeNS(RDF, "rdf:parseType", "Resource")
    for prefix_name, value in (("stEvt:action", "edited"), ("stEvt:changed", "/"),
                               ("stEvt:instanceID", lineage.instance_id), ("stEvt:when", lineage.when),
                               ("stEvt:softwareAgent", lineage.software_agent),
                               ("stEvt:parameters", lineage.parameters)):
        element = doc.createElementNS(NAMESPACES["stEvt"], prefix_name)
        element.setAttribute("xmlns:stEvt", NAMESPACES["stEvt"])
        element.appendChild(doc.createTextNode(value))
        item.appendChild(element)
    return item
