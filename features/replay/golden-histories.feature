@replay
Feature: Recorded histories still replay on today's engine
  Run logs recorded by the engine are kept under features/fixtures/histories.
  Every change to the engine must still replay them: same decisions, same
  ending, intact hash chain. A history the engine no longer agrees with fails
  and shows where. A real run becomes one with `meshhook export-history`
  (see the README); `npm run record-histories` re-records the originals.

  @smoke
  Scenario Outline: The history "<history>" replays without divergence
    Given the recorded history "<history>"
    When it is replayed against today's engine
    Then replay finds no divergence
    And its hash chain is intact
    And it ends "<status>" as it did when it was recorded

    Examples:
      | history                                | status    |
      | order-sync-succeeded                   | succeeded |
      | order-sync-retried                     | succeeded |
      | order-sync-refused                     | failed    |
      | order-review-else-branch               | succeeded |
      | order-follow-up-delayed                | succeeded |
      | order-sync-exported-from-up            | succeeded |
      | label-order-skipped-after-too-wide     | succeeded |
      | order-follow-up-timed-out-then-skipped | succeeded |

  Scenario: A history whose recorded decisions today's engine would not make fails with the divergence shown
    Given the recorded history "order-sync-edited-branch-output"
    When it is replayed against today's engine
    Then replay reports the first divergence at event 9
    And the divergence shows the engine now decides "\"condition\":true" where the log has "\"taken\":\"done\""
