"""cxr.readers: R2Gen JSON (IU, MIMIC), CheXpert Plus CSV, folders / manifests; strict and lenient."""
from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from pydicom import examples

from cxr.readers import (
    DatasetKind,
    ImageCheck,
    bundled_iu_annotation,
    read_chexpert_plus,
    read_dataset,
    read_folder,
    read_r2gen,
)
from cxr.records import DataError, ErrorPolicy


# --- R2Gen: the real IU X-ray file ------------------------------------------------------------
def test_bundled_iu_annotation(iu_annotation):
    assert bundled_iu_annotation() == iu_annotation
    records = read_r2gen(iu_annotation)
    assert Counter(r.split for r in records) == {"train": 2069, "val": 296, "test": 590}
    first = records[0]
    assert first.study_id == "CXR2384_IM-0942" and first.dataset == "iu_xray"
    assert first.image_paths == (Path("CXR2384_IM-0942/0.png"), Path("CXR2384_IM-0942/1.png"))
    assert first.report.startswith("The heart size and pulmonary vascularity")
    assert first.findings == first.impression == ""
    assert all(len(r.image_paths) == 2 for r in records)


def test_r2gen_split_filter_and_image_root(iu_annotation, tmp_path):
    test = read_r2gen(iu_annotation, image_root=tmp_path, splits=["test"])
    assert len(test) == 590 and {r.split for r in test} == {"test"}
    assert test[0].image_paths[0].parent.parent == tmp_path
    assert len(read_r2gen(iu_annotation, splits=["valid"])) == 296      # CheXpert-style alias
    with pytest.raises(ValueError, match="unknown split"):
        read_r2gen(iu_annotation, splits=["dev"])


# --- R2Gen: MIMIC-CXR shape -------------------------------------------------------------------
MIMIC_ID = "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"


def mimic_item(dicom: str, subject: int, study: int, split: str, report: str = "No acute process.") -> dict:
    folder = f"p{str(subject)[:2]}/p{subject}/s{study}"
    return {"id": dicom, "study_id": study, "subject_id": subject, "report": report,
            "image_path": [f"{folder}/{dicom}.jpg"], "split": split}


def write_mimic(tmp_path: Path, **overrides) -> Path:
    data = {
        "train": [
            mimic_item(MIMIC_ID, 10000032, 50414267, "train",
                       "There is no focal consolidation, pleural effusion or pneumothorax.\n "
                       "Bilateral nodular opacities ___ represent nipple shadows."),
            mimic_item("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", 10000032, 53189527, "train"),
        ],
        "val": [mimic_item("ea030e7a-2e3b1346-bc518786-7a8fd698-f673b44c", 10000898, 50771383, "val")],
        "test": [mimic_item("f3e68cda-65b2e53e-4bd0b47c-7ec3adb5-e5dfb2d5", 10001217, 58913004, "test")],
    }
    data.update(overrides)
    path = tmp_path / "annotation.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def test_r2gen_mimic_shape(tmp_path):
    records = read_r2gen(write_mimic(tmp_path), dataset="mimic_cxr")
    assert [r.split for r in records] == ["train", "train", "val", "test"]
    first = records[0]
    assert first.study_id == MIMIC_ID and first.dataset == "mimic_cxr"
    assert first.image_paths == (Path(f"p10/p10000032/s50414267/{MIMIC_ID}.jpg"),)
    assert "\n" in first.report       # raw text: cxr.clean does R2Gen's newline handling


def test_r2gen_check_images_names_missing_file(tmp_path):
    annotation = write_mimic(tmp_path)
    root = tmp_path / "files"
    for r in read_r2gen(annotation, image_root=root)[:3]:
        r.image_paths[0].parent.mkdir(parents=True, exist_ok=True)
        r.image_paths[0].write_bytes(b"")
    with pytest.raises(DataError, match=r"annotation\.json: test\[0\] .*image file not found: .*s58913004"):
        read_r2gen(annotation, image_root=root, check_images=True)
    policy = ErrorPolicy.lenient()
    assert len(read_r2gen(annotation, image_root=root, check_images="exists", policy=policy)) == 3
    assert policy.skipped == 1
    with pytest.raises(ValueError, match="image_root"):
        read_r2gen(annotation, check_images=ImageCheck.EXISTS)


def test_r2gen_malformed_json_gives_line_and_column(tmp_path):
    path = tmp_path / "annotation.json"
    path.write_text('{"train": [\n  {"id": "a", "report": "x"\n  "image_path": []}\n]}')
    with pytest.raises(DataError, match=r"annotation\.json: malformed JSON at line 3, column 3"):
        read_r2gen(path)
    path.write_text('["not", "an", "object"]')
    with pytest.raises(DataError, match="expected an object"):
        read_r2gen(path)


@pytest.mark.parametrize(
    ("bad_item", "message"),
    [
        ({"id": "bad1", "image_path": ["x.jpg"], "split": "val"}, "missing key 'report'"),
        ({"id": "bad1", "report": "ok.", "image_path": "x.jpg", "split": "val"},
         "'image_path' must be a list, got str"),
        ({"id": "bad1", "report": "   ", "image_path": ["x.jpg"], "split": "val"}, "empty report"),
        ({"id": "bad1", "report": "ok.", "image_path": [], "split": "val"},
         "'image_path' must be a non-empty list of non-empty strings"),
        ({"id": "bad1", "report": "ok.", "image_path": ["x.jpg"], "split": "test"},
         "'split' is 'test' but the item is listed under 'val'"),
        ({**mimic_item("bad1", 10000898, 50771383, "val"), "study_id": "s507"},
         "'study_id' must be an integer"),
        ({**mimic_item("bad1", 10000898, 50771383, "val"), "study_id": 59999999},
         "image path 'p10/p10000898/s50771383/bad1.jpg' is not under p10000898/s59999999/"),
        ({**mimic_item(MIMIC_ID, 10000898, 50771383, "val")}, "duplicate id"),
    ],
)
def test_r2gen_bad_items_strict_and_lenient(tmp_path, bad_item, message):
    good = mimic_item("ea030e7a-2e3b1346-bc518786-7a8fd698-f673b44c", 10000898, 50771383, "val")
    path = write_mimic(tmp_path, val=[good, bad_item])
    with pytest.raises(DataError) as err:
        read_r2gen(path)
    assert f"annotation.json: val[1] (id {bad_item['id']!r}): {message}" in str(err.value)
    policy = ErrorPolicy.lenient()
    records = read_r2gen(path, policy=policy)
    assert len(records) == 4 and policy.skipped == 1 and message in policy.messages[0]


def test_r2gen_absent_split_is_an_error(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"train": [mimic_item(MIMIC_ID, 10000032, 50414267, "train")]}))
    with pytest.raises(DataError, match=r"no split\(s\) \['test'\]"):
        read_r2gen(path, splits=["test"])


# --- CheXpert Plus ----------------------------------------------------------------------------
CHEXPERT_COLUMNS = [
    "path_to_image", "path_to_dcm", "frontal_lateral", "ap_pa", "deid_patient_id",
    "patient_report_date_order", "report", "section_narrative", "section_clinical_history",
    "section_history", "section_comparison", "section_technique", "section_procedure_comments",
    "section_findings", "section_impression", "section_end_of_impression", "section_summary",
    "section_accession_number", "age", "sex", "race", "ethnicity", "interpreter_needed",
    "insurance_type", "recent_bmi", "deceased", "split",
]
REPORT_1 = ("NARRATIVE:\nCHEST, 2 VIEWS\n\nFINDINGS:\nThe lungs are clear.  No effusion.\n\n"
            "IMPRESSION:\n1. No acute cardiopulmonary process.")


def chexpert_row(image: str, view: str, ap_pa: str, split: str, findings: str, impression: str,
                 report: str) -> dict[str, str]:
    patient = image.split("/")[1] if image.count("/") >= 3 else ""
    row = dict.fromkeys(CHEXPERT_COLUMNS, "")
    row.update(path_to_image=image, path_to_dcm=image.replace(".jpg", ".dcm"), frontal_lateral=view,
               ap_pa=ap_pa, deid_patient_id=patient, patient_report_date_order="1", report=report,
               section_findings=findings, section_impression=impression, age="68", sex="Female",
               race="White", ethnicity="Non-Hispanic/Non-Latino", interpreter_needed="No",
               insurance_type="Medicare", recent_bmi="27.1", deceased="No", split=split)
    return row


def write_chexpert(tmp_path: Path, malformed: bool = True) -> Path:
    findings = "The lungs are clear.  No effusion."
    impression = "1. No acute cardiopulmonary process."
    rows = [
        chexpert_row("train/patient00001/study1/view2_lateral.jpg", "Lateral", "", "train",
                     findings, impression, REPORT_1),
        chexpert_row("train/patient00001/study1/view1_frontal.jpg", "Frontal", "PA", "train",
                     findings, impression, REPORT_1),
        chexpert_row("train/patient00002/study2/view1_frontal.jpg", "Frontal", "AP", "train",
                     "", "", "Portable chest.\nStable support devices, unchanged."),
        chexpert_row("valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP", "valid",
                     "", "Mild cardiomegaly,\nno edema.", "IMPRESSION: Mild cardiomegaly, no edema."),
    ]
    path = tmp_path / "df_chexpert_plus_240401.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, CHEXPERT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        if malformed:   # row 5: a stray comma splits the path into two fields
            fh.write("train/patient00003/study1/view1_frontal.jpg,extra," + ",".join([""] * 26) + "\n")
    return path


def test_chexpert_plus_groups_studies_frontal_first(tmp_path):
    records = read_chexpert_plus(write_chexpert(tmp_path, malformed=False), image_root=tmp_path)
    assert [r.study_id for r in records] == ["patient00001/study1", "patient00002/study2",
                                             "patient64541/study1"]
    first, second, third = records
    assert [p.name for p in first.image_paths] == ["view1_frontal.jpg", "view2_lateral.jpg"]
    assert first.image_paths[0] == tmp_path / "train/patient00001/study1/view1_frontal.jpg"
    assert first.findings == "The lungs are clear. No effusion."
    assert first.report == "The lungs are clear. No effusion. 1. No acute cardiopulmonary process."
    assert second.findings == second.impression == ""
    assert second.report == "Portable chest. Stable support devices, unchanged."   # falls back
    assert third.split == "val" and third.report == "Mild cardiomegaly, no edema."
    assert {r.dataset for r in records} == {"chexpert_plus"}


def test_chexpert_plus_malformed_row(tmp_path):
    path = write_chexpert(tmp_path)
    with pytest.raises(DataError, match=r"df_chexpert_plus_240401\.csv: row 5 \(line \d+\): 1 field"):
        read_chexpert_plus(path)
    policy = ErrorPolicy.lenient()
    assert len(read_chexpert_plus(path, policy=policy)) == 3 and policy.skipped == 1


def test_chexpert_plus_splits_dicom_and_row_checks(tmp_path):
    path = write_chexpert(tmp_path, malformed=False)
    valid = read_chexpert_plus(path, splits=["val"])
    assert [r.study_id for r in valid] == ["patient64541/study1"]
    dicom = read_chexpert_plus(path, use_dicom=True)
    assert dicom[0].image_paths[0] == Path("train/patient00001/study1/view1_frontal.dcm")
    with path.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, CHEXPERT_COLUMNS)
        writer.writerow(chexpert_row("train/patient00009/study1/view1_frontal.jpg", "Frontal", "AP",
                                     "train", "", "", ""))
        writer.writerow(chexpert_row("valid/patient00001/study1/view3_frontal.jpg", "Frontal", "AP",
                                     "valid", "x", "y", "z"))
        writer.writerow(chexpert_row("view1.jpg", "Frontal", "AP", "train", "x", "y", "z"))
        writer.writerow(chexpert_row("test/patient00010/study1/view1.jpg", "Frontal", "AP", "holdout",
                                     "x", "y", "z"))
    policy = ErrorPolicy.lenient()
    assert len(read_chexpert_plus(path, policy=policy)) == 3
    assert policy.skipped == 4
    joined = "\n".join(policy.messages)
    assert "row 5 (line" in joined and "no findings, impression or report text" in joined
    assert "study patient00001/study1: split 'val' differs from 'train'" in joined
    assert "'view1.jpg' is not <split>/<patient>/<study>/<file>" in joined
    assert "unknown split 'holdout'" in joined


def test_chexpert_plus_missing_column(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("path_to_image,split\ntrain/p/s/v.jpg,train\n")
    with pytest.raises(DataError, match=r"x\.csv: missing column\(s\) \['frontal_lateral'"):
        read_chexpert_plus(path)


# --- folders and manifests --------------------------------------------------------------------
def make_study_folders(root: Path) -> Path:
    (root / "s1").mkdir(parents=True)
    Image.new("L", (4, 4), 10).save(root / "s1" / "b_lateral.png")
    Image.new("L", (4, 4), 20).save(root / "s1" / "a_frontal.jpg")
    (root / "s1" / "report.txt").write_text("No acute\ndisease.\n")
    (root / "s2").mkdir()
    examples.ct.save_as(root / "s2" / "view.dcm")
    (root / "s2" / "notes.md").write_text("ignored")
    return root


def test_folder_of_study_folders(tmp_path, caplog):
    root = make_study_folders(tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        records = read_folder(root)
    assert [r.study_id for r in records] == ["s1", "s2"]
    assert [p.name for p in records[0].image_paths] == ["a_frontal.jpg", "b_lateral.png"]
    assert records[0].report == "No acute disease." and records[1].report == ""
    assert records[1].image_paths == (root / "s2" / "view.dcm",)
    assert "notes.md" in caplog.text
    with pytest.raises(ValueError, match="no splits"):
        read_folder(root, splits=["train"])


def test_folder_finds_dicom_without_extension_by_content(tmp_path, caplog):
    root = make_study_folders(tmp_path / "data")
    examples.ct.save_as(root / "s2" / "IM00001")          # a PACS export's name
    (root / "s2" / "IM00002").write_bytes(b"not an image at all, no DICM magic")
    with caplog.at_level(logging.WARNING):
        records = read_folder(root)
    s2 = next(r for r in records if r.study_id == "s2")
    assert [p.name for p in s2.image_paths] == ["IM00001", "view.dcm"]
    assert "IM00002" in caplog.text and "IM00001" not in caplog.text


def test_folder_bad_images_strict_and_lenient(tmp_path):
    root = make_study_folders(tmp_path / "data")
    (root / "s3").mkdir()
    (root / "s3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "s4").mkdir()
    (root / "s4" / "report.txt").write_text("only text")
    with pytest.raises(DataError, match=r"study s3: .*broken\.png"):
        read_folder(root)
    policy = ErrorPolicy.lenient()
    assert [r.study_id for r in read_folder(root, policy=policy)] == ["s1", "s2"]
    assert policy.skipped == 2 and "study s4: no image files" in policy.messages[1]
    assert [study_id for study_id, _ in policy.skips] == ["s3", "s4"]   # run_batch's failures carry the id
    assert len(read_folder(root, policy=ErrorPolicy.lenient(), check_images="none")) == 3


def test_folder_manifest(tmp_path):
    make_study_folders(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "study_id,image_path,report,split\n"
        "A,s1/a_frontal.jpg,First report.,train\n"
        "A,s1/b_lateral.png,,train\n"
        "B,s2/view.dcm,Second report.,valid\n"
        "C,missing/x.png,Third.,test\n"
    )
    with pytest.raises(DataError, match=r"manifest\.csv: row 4 \(line 5\): study C: .*missing/x\.png"):
        read_folder(manifest)
    policy = ErrorPolicy.lenient()
    records = read_folder(manifest, policy=policy)
    assert [(r.study_id, r.split, r.report, len(r.image_paths)) for r in records] == [
        ("A", "train", "First report.", 2), ("B", "val", "Second report.", 1)]
    assert records[0].image_paths[1] == tmp_path / "s1" / "b_lateral.png" and policy.skipped == 1
    assert [r.study_id for r in read_folder(manifest, splits=["val"])] == ["B"]


def test_folder_manifest_view_column_puts_frontal_first(tmp_path):
    make_study_folders(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("study_id,image_path,view\nA,s1/b_lateral.png,LATERAL\nA,s1/a_frontal.jpg,PA\n")
    (record,) = read_folder(manifest)
    assert [p.name for p in record.image_paths] == ["a_frontal.jpg", "b_lateral.png"]


def test_folder_manifest_row_problems(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("study_id,image_path,report\nA,a.png,x\n,b.png,y\nA,c.png,other\nD,,z\n")
    policy = ErrorPolicy.lenient()
    records = read_folder(manifest, policy=policy, check_images=ImageCheck.NONE)
    assert [r.study_id for r in records] == ["A"] and policy.skipped == 3
    assert "row 2 (line 3): empty study_id" in policy.messages[0]
    assert "row 3 (line 4): study A: report differs" in policy.messages[1]
    assert "row 4 (line 5): empty image_path" in policy.messages[2]
    with pytest.raises(DataError, match="no such folder"):
        read_folder(tmp_path / "nowhere")


# --- dispatcher -------------------------------------------------------------------------------
def test_read_dataset_dispatch(iu_annotation, tmp_path):
    assert len(read_dataset("r2gen", iu_annotation, splits=["val"])) == 296
    chexpert = write_chexpert(tmp_path, malformed=False)
    assert len(read_dataset(DatasetKind.CHEXPERT_PLUS, chexpert)) == 3
    root = make_study_folders(tmp_path / "data")
    assert len(read_dataset("folder", root, check_images="exists")) == 2
    with pytest.raises(ValueError):
        read_dataset("nifti", root)


def test_folder_orders_dicom_views_by_view_position(tmp_path):
    """File names say nothing (a PACS export): ViewPosition LL / LATERAL goes after PA / AP."""
    import numpy as np

    from tests.cxr.test_images import write_dicom

    study = tmp_path / "data" / "s1"
    study.mkdir(parents=True)
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8)
    write_dicom(study / "IM00001", pixels, 12, ViewPosition="LL")
    write_dicom(study / "IM00002", pixels, 12, ViewPosition="PA")
    write_dicom(study / "IM00003", pixels, 12, ViewPosition="LATERAL")
    write_dicom(study / "IM00004", pixels, 12)                          # no ViewPosition: kept in place
    write_dicom(study / "IM00005", pixels, 12, ViewPosition="AP")
    (record,) = read_folder(tmp_path / "data")
    assert [p.name for p in record.image_paths] == ["IM00002", "IM00004", "IM00005", "IM00001", "IM00003"]


def test_lenient_skips_carry_the_study_id_in_every_reader(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("study_id,image_path,split\nst9,a.png,nonsense\n")
    policy = ErrorPolicy.lenient()
    read_folder(manifest, policy=policy, check_images="none")
    assert policy.skips == [("st9", policy.messages[0])] and "unknown split" in policy.messages[0]
